"""What the benchmark runs: named model variants, test clips and the model file.

* Variants: named ways of running the network (``fp32``, ``bf16-cl``,
  ``fp16-cl-graphs``, ``onnx``, ``ov-int8`` ...), each a set of ``model``
  config values.
* Clips: H.264 clips at 720p, 1080p or any size, made from the demo clip
  (pillarboxed) or a synthetic moving disc, written once to the work folder.
* Model: a model file, or ``random:ARCH/ENCODER@SIZE`` for timing with
  random weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamseg.backends import openvino as ov_backend
from streamseg.model import ModelFileError, ModelSpec, build_network, save_model
from streamseg.segmenter import ModelSettings
from streamseg.sources import probe_video, read_video

log = logging.getLogger(__name__)

RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
# Where the bench writes its clips and scratch files unless told otherwise.
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "streamseg-bench"
CLIP_FPS = 25
DEMO_CLIP = Path(__file__).resolve().parents[2] / "samples" / "demo.mp4"
RANDOM_PREFIX = "random:"
CONFIG_VARIANT = "config"


class BenchError(Exception):
    """A benchmark cannot run as asked (unknown variant, no data); names the fix."""


# --- variants -----------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A named way of running the network: values for the ``model`` config section.

    Attributes:
        name: Short name used on the command line, e.g. ``bf16-cl``.
        settings: ModelSettings fields this variant sets.
        cuda_only: Only meaningful on CUDA.
    """

    name: str
    settings: Mapping[str, Any]
    cuda_only: bool = False

    def apply(self, base: ModelSettings) -> ModelSettings:
        return dataclasses.replace(base, **dict(self.settings))


def _variant(
    name: str,
    precision: str,
    *,
    channels_last: bool = False,
    backend: str = "torch",
    compile_mode: str | None = None,
    cuda_graphs: bool = False,
    cuda_only: bool = False,
    quantized: bool = False,
    streams: int | None = None,
) -> Variant:
    settings = {
        "quantized": quantized,
        "streams": streams,
        "precision": precision,
        "channels_last": channels_last,
        "backend": backend,
        "compile": compile_mode is not None,
        "compile_mode": compile_mode or "default",
        "cuda_graphs": cuda_graphs,
    }
    return Variant(name, settings, cuda_only)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _variant("fp32", "fp32"),
        _variant("fp32-cl", "fp32", channels_last=True),
        _variant("bf16", "bf16"),
        _variant("bf16-cl", "bf16", channels_last=True),
        _variant("bf16-cl-compile", "bf16", channels_last=True, compile_mode="default"),
        _variant("fp32-compile", "fp32", compile_mode="default"),
        _variant("onnx", "fp32", backend="onnx"),
        _variant("ov-fp32", "fp32", backend="openvino"),
        _variant("ov-int8", "fp32", backend="openvino", quantized=True),
        # One stream (the latency hint): every call on all the threads.
        _variant("ov-int8-1s", "fp32", backend="openvino", quantized=True, streams=1),
        _variant("fp16", "fp16", cuda_only=True),
        _variant("fp16-cl", "fp16", channels_last=True, cuda_only=True),
        _variant(
            "fp16-cl-graphs",
            "fp16",
            channels_last=True,
            cuda_graphs=True,
            cuda_only=True,
        ),
        _variant(
            "fp16-cl-compile",
            "fp16",
            channels_last=True,
            compile_mode="reduce-overhead",
            cuda_only=True,
        ),
    )
}
DEFAULT_VARIANTS = {
    "cpu": (
        "fp32",
        "bf16-cl",
        "bf16-cl-compile",
        "onnx",
        "ov-fp32",
        "ov-int8",
        "ov-int8-1s",
    ),
    "cuda": ("fp32", "fp16", "fp16-cl", "fp16-cl-graphs", "fp16-cl-compile"),
}


def parse_names(text: str | None) -> tuple[str, ...] | None:
    """``"a,b"`` -> ``("a", "b")``; empty or ``None`` -> ``None``."""
    names = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    return names or None


def variant_names(
    device: torch.device, model_path: str | Path | None = None
) -> tuple[str, ...]:
    """The variants benchmarked by default on ``device`` (for ``model_path``).

    OpenVINO variants are left out where OpenVINO is not installed, and
    ``ov-int8`` and ``ov-int8-1s`` where the model file has no INT8 artefact.
    """
    names = DEFAULT_VARIANTS["cuda" if device.type == "cuda" else "cpu"]
    if not ov_backend.available():
        return tuple(n for n in names if not n.startswith("ov-"))
    if model_path is None or not ov_backend.int8_paths(model_path).any_exist():
        return tuple(n for n in names if not n.startswith("ov-int8"))
    return names


def resolve_variant(name: str, base: ModelSettings) -> ModelSettings:
    """``base`` with a variant applied; ``config`` is ``base`` itself.

    Raises:
        BenchError: Unknown variant name.
    """
    if name == CONFIG_VARIANT:
        return base
    if name not in VARIANTS:
        raise BenchError(
            f"variant {name!r}: expected {CONFIG_VARIANT} or one of "
            f"{', '.join(VARIANTS)}"
        )
    return VARIANTS[name].apply(base)


def resolve_backend(settings: ModelSettings, device: torch.device) -> ModelSettings:
    """``settings`` with ``backend auto`` and ``quantized`` resolved as
    :meth:`streamseg.segmenter.Segmenter.from_settings` resolves them; as given
    where they cannot be (loading the segmenter then reports why, with the fix).
    """
    try:
        return settings.resolve_backend(device)[0]
    except (ModelFileError, ValueError):
        return settings


def settings_key(settings: ModelSettings, device: torch.device) -> tuple:
    """What decides how the network runs (two variants with one key are one run)."""
    settings = resolve_backend(settings, device)
    precision = settings.resolved_precision(device).name
    not_torch = settings.backend != "torch"
    return (
        precision,
        settings.channels_last and not not_torch,
        settings.backend,
        settings.quantized is True,
        settings.compile_mode if settings.compile else None,
        settings.cuda_graphs,
        settings.tta,
        resolved_streams(settings),
    )


def resolved_streams(settings: ModelSettings, *, live: bool = False) -> int | None:
    """The inference streams ``settings`` (backend resolved) mean with torch's
    threads; ``None`` where they cannot run (loading says why)."""
    try:
        return settings.resolved_streams(
            settings.backend, torch.get_num_threads(), live=live
        )
    except ValueError:
        return None


# --- clips --------------------------------------------------------------------


def parse_resolution(text: str) -> tuple[int, int]:
    """``720p``, ``1080p`` or ``WIDTHxHEIGHT`` -> (width, height).

    Raises:
        BenchError: Anything else.
    """
    if text in RESOLUTIONS:
        return RESOLUTIONS[text]
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if match is None or min(int(match[1]), int(match[2])) < 16:
        raise BenchError(
            f"resolution {text!r}: expected 720p, 1080p or WIDTHxHEIGHT (e.g. 1280x720)"
        )
    return int(match[1]), int(match[2])


def bench_clips(
    frames: int,
    names: tuple[str, ...] = tuple(RESOLUTIONS),
    folder: Path = DEFAULT_WORK_DIR,
) -> dict[str, Path]:
    """The bench's clips by name (720p, 1080p), each made once by :func:`make_clip`."""
    return {name: make_clip(RESOLUTIONS[name], frames, folder) for name in names}


def make_clip(
    size_wh: tuple[int, int],
    frames: int,
    folder: str | Path,
    *,
    source: str | Path | None = DEMO_CLIP,
    fps: int = CLIP_FPS,
) -> Path:
    """Write (or reuse) an H.264 test clip of ``frames`` frames at ``size_wh``.

    The frames come from ``source`` (the bundled demo clip, 640x480 real
    endoscopy imagery), cycled as needed, scaled to the clip's height and
    pillarboxed with black, as endoscopy towers output 16:9 video. Without a
    source, a textured moving disc is drawn instead.

    Returns:
        ``folder/clip-<W>x<H>-<frames>f.mp4`` (reused when it already holds
        ``frames`` frames).
    """
    import av

    width, height = size_wh
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    origin = "demo" if source is not None and Path(source).exists() else "disc"
    path = folder / f"clip-{origin}-{width}x{height}-{frames}f.mp4"
    if path.exists():
        with contextlib.suppress(Exception):
            if probe_video(str(path))[1] == frames:
                return path
    images = _clip_images(source if origin == "demo" else None, size_wh, frames)
    handle, temporary = tempfile.mkstemp(suffix=".mp4", dir=folder)
    os.close(handle)
    try:
        with av.open(temporary, mode="w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
            for index, image in enumerate(images):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                frame.time_base = Fraction(1, fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    log.info("wrote test clip %s", path)
    return path


def _clip_images(
    source: str | Path | None, size_wh: tuple[int, int], frames: int
) -> Iterator[np.ndarray]:
    if source is None:
        for index in range(frames):
            yield _disc_frame(size_wh, index, frames)
        return
    produced = 0
    while produced < frames:  # cycle through the source as often as needed
        before = produced
        with contextlib.closing(read_video(str(source))) as pictures:
            for frame in pictures:
                if produced >= frames:
                    return
                yield pillarbox(frame.pixels, size_wh)
                produced += 1
        if produced == before:
            raise BenchError(f"{source}: holds no frames; pass another --clip")


def pillarbox(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Scale ``image`` to fit ``size_wh`` (aspect kept) and centre it on black.

    Args:
        image: (H, W, 3) uint8 RGB.
        size_wh: Output (width, height).

    Returns:
        (height, width, 3) uint8 RGB.
    """
    import cv2

    width, height = size_wh
    scale = min(height / image.shape[0], width / image.shape[1])
    inner_w = min(width, round(image.shape[1] * scale))
    inner_h = min(height, round(image.shape[0] * scale))
    scaled = cv2.resize(image, (inner_w, inner_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - inner_h) // 2, (width - inner_w) // 2
    canvas[top : top + inner_h, left : left + inner_w] = scaled
    return canvas


def _disc_frame(size_wh: tuple[int, int], index: int, frames: int) -> np.ndarray:
    width, height = size_wh
    yy, xx = np.mgrid[0:height, 0:width]
    texture = ((xx // 8 + yy // 8) % 2 * 40 + 60).astype(np.uint8)
    image = np.stack([texture, texture // 2, texture // 3], axis=-1)
    radius = min(width, height) / 6
    cx = radius + (width - 2 * radius) * index / max(frames - 1, 1)
    inside = (yy - height / 2) ** 2 + (xx - cx) ** 2 <= radius**2
    image[inside] = (230, 90, 70)
    return image


# --- model --------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """The model benchmarked.

    Attributes:
        path: Model file (for ``random:`` specs, the file written for it).
        architecture: smp architecture.
        encoder: Encoder name.
        input_hw: Network input (height, width).
        random_weights: True when built with random weights (timing only;
            accuracy figures are meaningless then).
    """

    path: str
    architecture: str
    encoder: str
    input_hw: tuple[int, int]
    random_weights: bool


def parse_random_spec(text: str) -> ModelSpec:
    """``random:ARCH/ENCODER@H[xW]`` -> a ModelSpec (random weights, for timing).

    Example:
        >>> parse_random_spec("random:UnetPlusPlus/efficientnet-b2@320").input_hw
        (320, 320)

    Raises:
        BenchError: Malformed text.
    """
    match = re.fullmatch(r"random:([\w.-]+)/([\w.-]+)@(\d+)(?:x(\d+))?", text)
    if match is None:
        raise BenchError(
            f"model {text!r}: expected a .safetensors file or "
            "random:ARCHITECTURE/ENCODER@SIZE, e.g. "
            "random:UnetPlusPlus/efficientnet-b2@320"
        )
    height = int(match[3])
    width = int(match[4]) if match[4] else height
    try:
        return ModelSpec(match[1], match[2], (height, width))
    except ValueError as error:
        raise BenchError(f"model {text!r}: {error}") from error


def prepare_model(model: str | Path, folder: str | Path) -> ModelInfo:
    """Resolve ``model`` (a file or a ``random:`` spec) to a model file.

    Raises:
        BenchError: Malformed ``random:`` spec or unknown architecture.
        ModelFileError: The file is missing or invalid.
    """
    text = str(model)
    if text.startswith(RANDOM_PREFIX):
        spec = parse_random_spec(text)
        height, width = spec.input_hw
        path = Path(folder) / (
            f"random-{spec.architecture}-{spec.encoder_name}-{height}x{width}.safetensors"
        )
        if not path.exists():
            torch.manual_seed(0)
            try:
                network = build_network(spec)
            except ValueError as error:
                raise BenchError(f"model {text!r}: {error}") from error
            save_model(path, network, spec)
        return ModelInfo(
            str(path), spec.architecture, spec.encoder_name, spec.input_hw, True
        )
    from streamseg.model import read_spec

    spec = read_spec(text)
    return ModelInfo(text, spec.architecture, spec.encoder_name, spec.input_hw, False)
