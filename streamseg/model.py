"""The model file: one ``.safetensors`` holding weights and everything inference needs.

Layout of a model file:

* tensors: the network's ``state_dict`` (float32 or float16);
* text header: ``{"format": "streamseg-model/1", "spec": "<ModelSpec as JSON>"}``.

No pickle is involved on any path: ``head -c 2000 model.safetensors`` shows the
spec, and loading a file never executes code from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from streamseg.transforms import Normalize

FORMAT = "streamseg-model/1"
# ImageNet statistics (RGB, pixels in [0, 1]); what smp reports for every ImageNet
# encoder.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MODEL_NAME = "default.safetensors"
# ``bundled:NAME``: a model file shipped in ``streamseg/assets`` (docs/model-card.md).
BUNDLED_PREFIX = "bundled:"


def check_threshold(value: float, name: str = "threshold") -> None:
    """A probability threshold (model file, override, smoothing) lies in (0, 1).

    Raises:
        ValueError: Names the setting and the value.
    """
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}: expected a value in (0, 1), got {value}")


def check_input_hw(value: Sequence[int], name: str = "input_hw") -> None:
    """A network input size (model file, override): two positive multiples of 32.

    Raises:
        ValueError: Names the setting and the value.
    """
    if len(value) != 2 or any(
        not isinstance(side, int) or side <= 0 or side % 32 for side in value
    ):
        raise ValueError(
            f"{name}: expected two positive multiples of 32 (height, width), "
            f"got {tuple(value)}"
        )


class ModelFileError(Exception):
    """The file is missing, is not a streamseg model, or does not fit its own spec."""


@dataclass(frozen=True)
class ModelSpec:
    """What inference must reproduce from training. Saved inside every model file.

    Attributes:
        architecture: segmentation_models_pytorch architecture, e.g. "UnetPlusPlus".
        encoder_name: smp encoder name, e.g. "efficientnet-b2".
        input_hw: Network input (height, width) in pixels, multiples of 32.
        mean: RGB normalization mean for pixels in [0, 1].
        std: RGB normalization std for pixels in [0, 1].
        threshold: Probability at or above which a pixel is polyp (calibrated
            on the validation split).
        class_name: What the foreground is.
        model_kwargs: Extra keyword arguments for ``smp.create_model``
            (e.g. ``{"decoder_channels": [256, 128, 64, 32, 16]}``).
        provenance: Free-form strings: dataset, split, epochs, validation Dice,
            git revision, date, encoder initialization.

    Example:
        >>> spec = ModelSpec(
        ...     "Unet", "resnet18", (64, 64), IMAGENET_MEAN, IMAGENET_STD, 0.5
        ... )
        >>> spec.input_hw
        (64, 64)
    """

    architecture: str
    encoder_name: str
    input_hw: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    threshold: float = 0.5
    class_name: str = "polyp"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_input_hw(self.input_hw)
        check_threshold(self.threshold)
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name}: expected 3 finite RGB values, got {values}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise ValueError(f"expected a JSON object, got {type(fields).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(
                f"unknown spec fields {unknown}; written by a newer streamseg?"
            )
        for name in ("input_hw", "mean", "std"):
            if name in fields:
                fields[name] = tuple(fields[name])
        return cls(**fields)


class SegmentationNetwork(nn.Module):
    """Normalization followed by an smp segmentation model.

    Input: (N, 3, H, W) float RGB in [0, 1]. Output: (N, 1, H, W) logits.
    Normalization is the first layer, so no caller can forget the mean/std
    or apply it twice, and any export (ONNX, TensorRT) keeps it.
    """

    def __init__(self, spec: ModelSpec, encoder_weights: str | None = None) -> None:
        super().__init__()
        # heavy; imported when a network is built
        import segmentation_models_pytorch as smp

        self.normalize = Normalize(spec.mean, spec.std)
        self.segmentation = smp.create_model(
            spec.architecture,
            encoder_name=spec.encoder_name,
            encoder_weights=encoder_weights,
            in_channels=3,
            classes=1,
            **dict(spec.model_kwargs),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.segmentation(self.normalize(images))


def build_network(
    spec: ModelSpec, *, encoder_weights: str | None = None
) -> SegmentationNetwork:
    """Build the network a spec describes, with random or pretrained encoder weights.

    Args:
        spec: The model card.
        encoder_weights: ``None`` (random init) or an smp weight name such as
            ``"imagenet"`` (downloaded by smp; needs a network).

    Raises:
        ValueError: Unknown architecture or encoder, with the fix.
        RuntimeError: Pretrained weights requested but not downloadable.
    """
    try:
        return SegmentationNetwork(spec, encoder_weights=encoder_weights)
    except KeyError as error:
        raise ValueError(
            f"unknown architecture {spec.architecture!r} "
            f"or encoder {spec.encoder_name!r} ({error}); "
            "see segmentation_models_pytorch's list of architectures/encoders"
        ) from error
    except OSError as error:
        if encoder_weights is None:
            raise
        raise RuntimeError(
            f"could not download {encoder_weights!r} weights for encoder "
            f"{spec.encoder_name!r} ({type(error).__name__}). This machine has no "
            "route to the weight hub: set encoder_weights to null (random init) or "
            "use an offline initialization such as 'lite-imagenet' for "
            "timm-tf_efficientnet_lite encoders"
        ) from error


def save_model(
    path: str | Path,
    network: nn.Module,
    spec: ModelSpec,
    *,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``network``'s weights and ``spec`` to one ``.safetensors`` file atomically.

    The file appears complete or not at all (written beside it, then renamed),
    so a run killed mid-save never leaves a half-written model behind.

    Args:
        path: Destination file.
        network: Usually a :class:`SegmentationNetwork` (torch.compile wrappers
            are unwrapped).
        spec: Saved in the header.
        dtype: ``torch.float16`` halves the file; floats are cast on load.
    """
    from safetensors.torch import save_file

    path = Path(path)
    network = getattr(network, "_orig_mod", network)
    state = {
        name: (
            tensor.detach().to("cpu", dtype) if tensor.is_floating_point() else tensor
        ).contiguous()
        for name, tensor in network.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=path.name, suffix=".tmp", dir=path.parent
    )
    os.close(handle)
    try:
        save_file(state, temporary, metadata={"format": FORMAT, "spec": spec.to_json()})
        # mkstemp creates 0600; give the model file the usual permissions (umask
        # applies).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def read_spec(path: str | Path) -> ModelSpec:
    """Read only the spec from a model file's header (no tensors are loaded)."""
    spec, _ = _open(Path(path), load_tensors=False)
    return spec


def load_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[SegmentationNetwork, ModelSpec]:
    """Load a model file into a float32 network in eval mode.

    Raises:
        ModelFileError: Missing, truncated or foreign file (pickle checkpoints
            are refused, never unpickled), or weights that do not fit the spec.
    """
    path = Path(path)
    spec, state = _open(path, load_tensors=True)
    try:
        network = build_network(spec)
    except ValueError as error:
        raise ModelFileError(f"{path}: {error}") from error
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        problems = _describe_mismatch(network.state_dict(), state)
        raise ModelFileError(
            f"{path}: weights do not fit a "
            f"{spec.architecture}/{spec.encoder_name} network "
            f"({problems or first}); the file's spec and tensors disagree: "
            "re-export it with streamseg's save_model"
        ) from error
    return network.to(device).eval(), spec


def _describe_mismatch(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]
) -> str:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [
        k
        for k in expected
        if k in found and tuple(expected[k].shape) != tuple(found[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]!r}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]!r}")
    if wrong:
        key = wrong[0]
        parts.append(
            f"{len(wrong)} of the wrong shape, e.g. {key!r} "
            f"{tuple(found[key].shape)} vs {tuple(expected[key].shape)}"
        )
    return "; ".join(parts)


def _open(
    path: Path, *, load_tensors: bool
) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    if not path.exists():
        raise ModelFileError(
            f"{path}: no such model file; pass --model with an existing .safetensors"
        )
    if path.is_dir():
        raise ModelFileError(
            f"{path}: is a folder; pass the .safetensors model file inside it"
        )
    with open(path, "rb") as raw:
        head = raw.read(16)
    # A safetensors file opens with its header length (u64, little-endian) and then
    # "{"; a length whose low byte is 0x80 must not be mistaken for pickle's magic.
    is_safetensors = head[8:9] == b"{"
    if not is_safetensors and (head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"):
        raise ModelFileError(
            f"{path}: looks like a pickle/torch.save checkpoint, which streamseg never "
            "unpickles (it can run code); "
            "convert it with save_model to a .safetensors model file"
        )
    try:
        with safe_open(str(path), framework="pt") as file:
            header = file.metadata() or {}
            if header.get("format") != FORMAT:
                raise ModelFileError(
                    f"{path}: expected a {FORMAT!r} file, found format "
                    f"{header.get('format')!r}; "
                    "it is a .safetensors file but not a streamseg "
                    "model: save it with streamseg.model.save_model"
                )
            try:
                spec = ModelSpec.from_json(header["spec"])
            except (KeyError, ValueError, TypeError) as error:
                raise ModelFileError(
                    f"{path}: unreadable model spec in header ({error})"
                ) from error
            state = (
                {name: file.get_tensor(name) for name in file.keys()}
                if load_tensors
                else {}
            )
    except SafetensorError as error:
        raise ModelFileError(
            f"{path}: not a readable .safetensors file ({error}); "
            "it may be truncated or of another format: download or export it again"
        ) from error
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read ({error})") from error
    return spec, state


def default_model_path() -> Path | None:
    """Path of the model bundled with the package, or None if this build has none."""
    return _bundled_file(DEFAULT_MODEL_NAME)


def _bundled_file(name: str) -> Path | None:
    path = Path(str(resources.files("streamseg") / "assets" / name))
    return path if path.is_file() else None


def bundled_model_names() -> tuple[str, ...]:
    """Names of the model files this build bundles (``default``, ``fast``, ...)."""
    folder = Path(str(resources.files("streamseg") / "assets"))
    return tuple(
        sorted(
            p.name.removesuffix(".safetensors") for p in folder.glob("*.safetensors")
        )
    )


def resolve_model_path(value: str | Path) -> Path:
    """A model file path, or ``bundled:NAME`` for a model shipped with the package.

    Raises:
        ModelFileError: ``bundled:NAME`` names no bundled model (lists those there are).
    """
    text = str(value)
    if not text.startswith(BUNDLED_PREFIX):
        return Path(value)
    name = text.removeprefix(BUNDLED_PREFIX)
    path = _bundled_file(f"{name}.safetensors") if name and "/" not in name else None
    if path is None:
        names = ", ".join(f"{BUNDLED_PREFIX}{n}" for n in bundled_model_names())
        raise ModelFileError(
            f"{text}: no such bundled model; this build bundles {names or 'none'} "
            "(or pass a .safetensors file)"
        )
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as 64 hex digits (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
