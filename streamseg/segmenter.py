"""Segmenter: Frame -> Prediction (upload, resize, forward, sigmoid).

The prediction holds the probabilities at the network's input size (they
cover the whole frame): smoothing and the area filter run there, and only the
final mask is scaled to the frame (:class:`streamseg.findings.Findings`).

:func:`predict_probabilities` is the one inference path (training's test-set
evaluation calls it too). :class:`Segmenter` runs it on frames; the forward
pass itself is a runner from :mod:`streamseg.backends`, chosen once, at
construction. :class:`ModelSettings` is the ``model`` config section and
:meth:`Segmenter.from_settings` the only mapping from it to a segmenter:

=================  ==========================================================
option             what it does
=================  ==========================================================
precision          autocast dtype: fp32, bf16 (CPU with AMX/AVX-512, GPUs),
                   fp16 (CUDA)
channels_last      NHWC memory format (faster convolutions with bf16 on CPU
                   and on tensor cores)
compile            ``torch.compile`` with ``compile_mode`` (``default``,
                   ``reduce-overhead`` = CUDA graphs through Inductor,
                   ``max-autotune``); compiled at construction for the
                   ``batch_sizes`` that will be used, and cached on disk by
                   Inductor (``TORCHINDUCTOR_CACHE_DIR``), so a second start is
                   much faster
cuda_graphs        one captured CUDA graph per batch size, replayed with a
                   static input buffer (CUDA only; removes per-kernel launch
                   overhead for small batches)
backend ``onnx``   the network exported to ONNX (cached under
                   :func:`streamseg.backends.onnx.cache_dir`) and run by ONNX
                   Runtime on the CPU; needs the ``onnx`` extra, imported only
                   when asked for
backend            OpenVINO on the CPU: the network converted to fp32 IR
``openvino``       (cached), or the model file's INT8 artefact
                   (:mod:`streamseg.backends.openvino`)
streams            OpenVINO: independent streams sharing the threads (files 2,
                   live sources 1 by default); a batch is split across them
                   and the pipeline keeps that many batches in flight
backend ``auto``   the setting only, resolved once in :meth:`Segmenter.from_settings`
                   by :func:`streamseg.backends.openvino.choose_backend`
                   (OpenVINO INT8 on a CPU where the model file has a
                   matching INT8 artefact; else torch)
=================  ==========================================================

On CUDA, frames reach the device through reusable pinned host buffers (the
copy is asynchronous and no pinned memory is allocated per frame); every
later step (resize, sigmoid) runs on the inference device.
Compiled graphs and CUDA graphs have static shapes: a batch whose size was
not prepared is padded with zeros up to the next prepared size (the network
treats batch rows independently), so a short last batch of a file does not
trigger a recompilation.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from streamseg.backends import BACKENDS, Backend, BackendSetting, Runner
from streamseg.backends.openvino import (
    BackendChoice,
    Int8ArtefactError,
    Quantized,
    choose_backend,
)
from streamseg.backends.torch import COMPILE_MODES, CompileMode, TorchRunner
from streamseg.config import ConfigError
from streamseg.device import (
    Precision,
    PrecisionName,
    autocast,
    configure_backend,
    resolve_precision,
    select_device,
    synchronize,
)
from streamseg.frames import Frame, Prediction
from streamseg.model import (
    ModelFileError,
    ModelSpec,
    check_input_hw,
    check_threshold,
    default_model_path,
    load_model,
    resolve_model_path,
)
from streamseg.transforms import network_input, resize
from streamseg.uploader import FrameUploader

log = logging.getLogger(__name__)

NO_DEFAULT_MODEL = (
    "no bundled default model in this build; pass --model FILE "
    "(train one with python -m training train ...)"
)
# Backends that run a converted graph on the CPU, and what they run.
CPU_GRAPHS = {"onnx": "the fp32 graph", "openvino": "fp32 or the INT8 artefact"}
# Calls per prepared batch size at construction: the first compiles or captures,
# the second runs the compiled path once more (cudagraph trees record there).
WARM_UP_CALLS = 2
# Inference streams with the openvino backend and 2+ threads (ModelSettings.streams).
AUTO_STREAMS = 2

FP32 = Precision(None)

TTA = Literal["none", "flips"]
TTA_NAMES: tuple[str, ...] = get_args(TTA)
# The flips of test-time augmentation (tensor dims of an (N, C, H, W) batch):
# horizontal, vertical. Each is its own inverse.
FLIPS: tuple[tuple[int, ...], ...] = ((-1,), (-2,))


def predict_probabilities(
    network: nn.Module | Runner,
    images: torch.Tensor,
    input_hw: Sequence[int],
    precision: Precision = FP32,
    *,
    tta: TTA = "none",
    output_hw: Sequence[int] | None = None,
) -> torch.Tensor:
    """Foreground probabilities at the images' own resolution (or ``output_hw``).

    This is the single inference path: the runtime's :class:`Segmenter` and
    the training package's test-set evaluation both call it.

    Args:
        network: Maps (N, 3, h, w) RGB in [0, 1] to (N, 1, h, w) logits.
        images: (N, 3, H, W) uint8 RGB (:func:`streamseg.transforms.upload`)
            or float RGB in [0, 1], on the network's device; brought to
            ``input_hw`` by :func:`streamseg.transforms.network_input`.
        input_hw: Network input (height, width).
        precision: Autocast dtype; the sigmoid and resize back run in float32.
        tta: ``flips``: test-time augmentation, the mean of the probabilities
            of the image, its horizontal and its vertical flip (each flipped
            back), all three in one forward pass of 3N images.
        output_hw: Size of the returned maps; ``None``: the images' own
            (height, width). The runtime asks for ``input_hw`` (no resize back).

    Returns:
        (N, H, W) float32 probabilities in [0, 1], on the images' device.
    """
    height, width = images.shape[-2:] if output_hw is None else output_hw
    inputs = network_input(images, input_hw)
    if tta == "flips":
        inputs = torch.cat([inputs, *(inputs.flip(dims) for dims in FLIPS)])
    with autocast(images.device, precision):
        logits = network(inputs)
    probabilities = logits.float().sigmoid()
    if tta == "flips":
        views = probabilities.chunk(1 + len(FLIPS))
        unflipped = [views[0]] + [
            view.flip(dims) for view, dims in zip(views[1:], FLIPS, strict=True)
        ]
        probabilities = torch.stack(unflipped).mean(dim=0)
    return resize(probabilities, (height, width))[:, 0]


def check_tta(tta: str) -> None:
    """Reject an unknown test-time augmentation name.

    Raises:
        ValueError: Names the valid choices.
    """
    if tta not in TTA_NAMES:
        raise ValueError(f"tta: expected one of {', '.join(TTA_NAMES)}, got {tta!r}")


@dataclass(frozen=True)
class ModelSettings:
    """The ``model`` section of the stream config (:meth:`Segmenter.from_settings`).

    Attributes:
        path: Model file (``.safetensors``) or ``bundled:NAME`` (a model shipped
            with the package: ``default``, ``fast``); ``None``: the bundled default.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (fp16 on CUDA; bf16 on a CPU with native bf16,
            AMX or AVX-512 BF16, with the torch backend; else fp32), ``fp32``,
            ``bf16`` or ``fp16`` (CUDA only).
        channels_last: NHWC memory format (faster on tensor cores and with
            bf16 on recent CPUs; the same speed for fp32 on a CPU).
        threshold: Overrides the model file's calibrated threshold
            (``None``: use the file's).
        batch_size: Frames per forward pass for files and folders (throughput);
            live sources always use 1 (the newest frame, at once).
        threads: CPU threads for torch (``None``: torch's default, one per
            core). On a CPU shared with other work, fewer threads can be much
            faster (measured on 2 busy cores: a small model ran 8x faster with
            1 thread than with 2); on an idle machine more threads help.
        backend: ``auto`` (OpenVINO with the model file's INT8 artefact on a
            CPU where OpenVINO is installed and the artefact exists, and no
            torch precision or option is asked for; else torch), ``torch``,
            ``onnx`` (ONNX Runtime on the CPU, fp32; needs the ``onnx``
            extra) or ``openvino`` (CPU, fp32 IR or INT8).
        quantized: ``auto`` (the INT8 artefact where one exists, with backend
            openvino or auto), ``true`` (require it) or ``false`` (fp32).
            The artefact (``<model stem>.int8.xml/.bin/.json``) is made by
            ``python -m training quantize`` and must match the model file.
        compile: Run the network through ``torch.compile`` (compiled at
            start for batch 1 and ``batch_size``; the time is logged, and
            Inductor caches the result on disk for the next start).
        compile_mode: ``default``, ``reduce-overhead`` (CUDA graphs through
            Inductor), ``max-autotune`` or ``max-autotune-no-cudagraphs``.
        cuda_graphs: Capture and replay CUDA graphs (CUDA only; not with
            ``compile``).
        tta: ``none``, or ``flips``: test-time augmentation (the image and its
            two flips in one forward pass; about 3x the inference work) for
            recorded videos where accuracy matters more than speed. Live
            sources always run without it (the newest frame, at once).
        streams: OpenVINO only: independent inference streams sharing the
            threads (a batch is split across them, and the pipeline keeps
            this many batches in flight). ``None``: for files, 2 with the
            openvino backend and at least 2 threads (on a CPU shared with
            decoding and encoding, threads that never wait for each other
            keep the network's speed: more frames per second); for live
            sources 1 (every frame on all the threads: the lowest latency).
            Measured in docs/benchmarks.md.
        input_hw: Network input (height, width) in pixels, multiples of 32,
            instead of the model file's own (``None``: the file's). The
            networks are fully convolutional: a smaller input costs less
            (about 0.64x the work at 256x256 instead of 320x320) and loses a
            little accuracy (measured in docs/benchmarks.md; check a size
            with ``streamseg bench --validate --set model.input_hw=[H,W]``).
            Every backend runs at it, the INT8 artefact included.
        live_fallback: For a live source on the CPU with ``path`` and
            ``input_hw`` unset: time the bundled default's network at start
            and, where it takes too much of the source's frame interval, run
            the bundled fast model (at its own input, else at 256x256)
            instead (:mod:`streamseg.live_model`; logged, and named in the
            run's tracks). ``False``: always the default.
    """

    path: Path | None = None
    device: str = "auto"
    precision: PrecisionName = "auto"
    channels_last: bool = True
    threshold: float | None = None
    batch_size: int = 4
    threads: int | None = None
    backend: BackendSetting = "auto"
    quantized: Quantized = "auto"
    compile: bool = False
    compile_mode: CompileMode = "default"
    cuda_graphs: bool = False
    tta: TTA = "none"
    streams: int | None = None
    input_hw: tuple[int, int] | None = None
    live_fallback: bool = True

    def __post_init__(self) -> None:
        if self.threshold is not None:
            check_threshold(self.threshold)
        check_tta(self.tta)
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: expected >= 1 or null, got {self.threads}")
        if self.streams is not None and self.streams < 1:
            raise ValueError(f"streams: expected >= 1 or null, got {self.streams}")
        if self.input_hw is not None:
            check_input_hw(self.input_hw)

    def resolved_streams(
        self, backend: Backend, threads: int, *, live: bool = False
    ) -> int:
        """How many inference streams these settings mean (``None`` resolved).

        Args:
            backend: The resolved backend (:meth:`resolve_backend`).
            threads: The inference threads (torch's thread count, set at the edge).
            live: For a live source (``None`` then means one stream).

        Raises:
            ValueError: More than one stream with a backend other than
                openvino, or more streams than threads.
        """
        if self.streams is None:
            fast = backend == "openvino" and threads >= 2 and not live
            return AUTO_STREAMS if fast else 1
        if self.streams > 1 and backend != "openvino":
            raise ValueError(
                f"streams: {self.streams} streams need backend openvino (this "
                f"run uses {backend}); set model.backend=openvino or drop "
                "model.streams"
            )
        if self.streams > threads:
            raise ValueError(
                f"streams: {self.streams} streams need at least as many threads "
                f"(this run has {threads}); raise model.threads or lower model.streams"
            )
        return self.streams

    def resolved_precision(self, device: torch.device) -> Precision:
        """The autocast dtype these settings mean on ``device`` (``auto`` resolved).

        Raises:
            ValueError: An unknown precision, or fp16 without CUDA.
        """
        return resolve_precision(
            device, self.precision, cpu_auto_bf16=self.backend in ("torch", "auto")
        )

    def resolve_backend(
        self, device: torch.device
    ) -> tuple[ModelSettings, BackendChoice]:
        """These settings with ``backend auto`` and ``quantized`` resolved.

        Returns:
            The settings with a concrete ``backend`` and ``quantized`` True
            (the INT8 artefact runs) or False, and the choice (its artefact
            path and the reason, for the log).

        Raises:
            ModelFileError: No model file (see :meth:`model_path`).
            Int8ArtefactError: The INT8 artefact is incomplete or belongs to
                another model file, or ``quantized`` is true and there is none.
            ValueError: ``quantized`` true with a backend other than
                openvino or auto.
        """
        choice = choose_backend(
            self.backend,
            self.quantized,
            device,
            self.model_path(),
            precision=self.precision,
            torch_options=self.compile or self.cuda_graphs,
        )
        resolved = dataclasses.replace(
            self, backend=choice.backend, quantized=choice.int8 is not None
        )
        return resolved, choice

    def model_path(self) -> Path:
        """``path`` (a file, or ``bundled:NAME``), or the bundled default model.

        Raises:
            ModelFileError: ``path`` is ``None`` and this build bundles no model,
                or ``bundled:NAME`` names none.
        """
        if self.path is not None:
            return resolve_model_path(self.path)
        path = default_model_path()
        if path is None:
            raise ModelFileError(NO_DEFAULT_MODEL)
        return path


def prepare_device(settings: ModelSettings) -> torch.device:
    """Pick the device and set the process-wide backend flags (threads), once.

    Called at the edge (``app.run``, the evaluation tools) before anything
    runs on the device.

    Raises:
        ConfigError: An unknown device, or CUDA asked for where there is none.
    """
    try:
        device = select_device(settings.device)
    except ValueError as error:
        raise ConfigError(f"model: {error}") from error
    configure_backend(device, threads=settings.threads)
    return device


class Segmenter:
    """Runs a trained network on frames.

    Args:
        network: A :class:`streamseg.model.SegmentationNetwork` (or compatible).
        spec: Its model card (input size, threshold).
        device: Where inference runs.
        precision: Autocast dtype (fp32, bf16 or fp16).
        channels_last: Use the NHWC memory format (faster convolutions on
            CPU with bf16 and on tensor-core GPUs). The constructor's defaults
            are the plain reference path (fp32, NCHW, eager); the runtime's
            tuned defaults are :class:`ModelSettings`' (:meth:`from_settings`).
        backend: ``torch``, ``onnx`` (ONNX Runtime, CPU, fp32 only) or
            ``openvino`` (CPU; fp32, or INT8 with ``int8``).
        compile: Run the network through ``torch.compile``.
        compile_mode: ``torch.compile`` mode.
        cuda_graphs: Capture and replay a CUDA graph per batch size (CUDA
            only; not together with ``compile``: use
            ``compile_mode="reduce-overhead"`` for both).
        batch_sizes: Batch sizes prepared at construction when a fast path
            needs it (compile, CUDA graphs): 1 for live sources and the file
            batch size. Smaller batches are padded up to a prepared size.
        tta: ``flips``: flip test-time augmentation
            (:func:`predict_probabilities`) unless :meth:`segment` is told
            otherwise (the app does for live sources).
        int8: backend openvino: the model file's INT8 artefact (``.xml``),
            checked by :func:`streamseg.backends.openvino.choose_backend`;
            ``None``: fp32.
        streams: backend openvino: inference streams sharing torch's
            threads (:class:`ModelSettings`); 1 for every other backend.

    Attributes:
        prepare_s: Seconds spent at construction on ONNX export/loading,
            compilation, graph capture and the warm-up calls (0 for eager).

    Raises:
        ValueError: An option this device or backend cannot honour, with the
            fix; or the ``onnx`` extra missing for ``backend="onnx"``.

    Example:
        >>> settings = ModelSettings(path=Path("model.safetensors"), compile=True)
        >>> segmenter = Segmenter.from_settings(
        ...     settings, prepare_device(settings)
        ... )  # doctest: +SKIP
        >>> segmenter.describe(), round(segmenter.prepare_s)  # doctest: +SKIP
        ('bf16, channels_last, compiled (default)', 58)
    """

    def __init__(
        self,
        network: nn.Module,
        spec: ModelSpec,
        device: torch.device,
        precision: Precision = FP32,
        *,
        channels_last: bool = False,
        backend: Backend = "torch",
        compile: bool = False,
        compile_mode: CompileMode = "default",
        cuda_graphs: bool = False,
        batch_sizes: Sequence[int] = (1,),
        tta: TTA = "none",
        int8: str | Path | None = None,
        streams: int = 1,
    ) -> None:
        check_tta(tta)
        if streams < 1 or (streams > 1 and backend != "openvino"):
            raise ValueError(
                f"streams: expected 1, or more with backend openvino; got {streams} "
                f"with backend {backend}"
            )
        check_options(
            device,
            precision,
            backend=backend,
            compile=compile,
            compile_mode=compile_mode,
            cuda_graphs=cuda_graphs,
            batch_sizes=batch_sizes,
        )
        self.spec = spec
        self.device = device
        self.precision = precision
        self.backend = backend
        self.channels_last = channels_last and backend == "torch"
        self.compile_mode: str | None = compile_mode if compile else None
        self.cuda_graphs = cuda_graphs
        self.tta = tta
        # Flip TTA runs 3 images per frame: static-shape fast paths prepare for that.
        views = 1 + len(FLIPS) if tta == "flips" else 1
        self.batch_sizes = tuple(
            sorted({size * (views if size > 1 else 1) for size in batch_sizes})
        )
        self.int8 = Path(int8) if int8 is not None and backend == "openvino" else None
        self.streams = streams
        network = network.to(device).eval()
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self._upload = FrameUploader(device)
        start_s = time.perf_counter()
        self._runner = self._make_runner(network)
        # Compile, capture, and on CUDA let cudnn pick its kernels, now rather
        # than on the first frames (a live source would drop frames meanwhile).
        prepares = self._is_fast_path or device.type == "cuda"
        if self.backend in ("torch", "openvino") and prepares:
            self.warm_up(self.batch_sizes)
        self.prepare_s = time.perf_counter() - start_s if prepares else 0.0
        if prepares:
            log.info("prepared %s in %.1f s", self.describe(), self.prepare_s)

    @classmethod
    def from_settings(
        cls,
        settings: ModelSettings,
        device: torch.device | None = None,
        *,
        live: bool = False,
    ) -> Segmenter:
        """The one mapping from the ``model`` config section to a segmenter.

        Resolves ``backend auto`` and ``quantized``
        (:func:`streamseg.backends.openvino.choose_backend`, logged with the
        reason) and the precision, finds the model file (the bundled default
        when ``settings.path`` is ``None``), applies the threshold override
        and prepares fast paths for batch 1 (live) and ``settings.batch_size``.

        Args:
            settings: The ``model`` section.
            device: From :func:`prepare_device` (chosen once, at the edge);
                ``None``: :func:`prepare_device` is called here.
            live: For a live source (:meth:`ModelSettings.resolved_streams`).

        Raises:
            ConfigError: An option this device or install cannot honour.
            ModelFileError: The model file is missing or invalid, or there is
                no bundled default, or its INT8 artefact is incomplete or
                belongs to another model file.
        """
        if device is None:
            device = prepare_device(settings)
        path = settings.model_path()
        try:
            settings, choice = settings.resolve_backend(device)
            precision = settings.resolved_precision(device)
            streams = settings.resolved_streams(
                settings.backend, torch.get_num_threads(), live=live
            )
        except Int8ArtefactError as error:
            raise ModelFileError(str(error)) from error
        except ValueError as error:
            raise ConfigError(f"model: {error}") from error
        log.info("%s", choice.reason)
        try:
            return cls.from_file(
                path,
                device,
                precision,
                threshold=settings.threshold,
                channels_last=settings.channels_last,
                backend=settings.backend,
                compile=settings.compile,
                compile_mode=settings.compile_mode,
                cuda_graphs=settings.cuda_graphs,
                batch_sizes=(1, settings.batch_size),
                tta=settings.tta,
                int8=choice.int8,
                streams=streams,
                input_hw=settings.input_hw,
            )
        except ValueError as error:  # an option this device or install cannot honour
            raise ConfigError(f"model: {error}") from error

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        device: torch.device,
        precision: Precision = FP32,
        *,
        threshold: float | None = None,
        input_hw: Sequence[int] | None = None,
        **options: object,
    ) -> Segmenter:
        """Load a model file; ``threshold`` and ``input_hw`` (if given) replace its own.

        ``options`` are the constructor's keyword options (``channels_last``,
        ``backend``, ``compile``, ...).
        """
        network, spec = load_model(path)
        if threshold is not None:
            spec = dataclasses.replace(spec, threshold=threshold)
        if input_hw is not None and tuple(input_hw) != spec.input_hw:
            log.info(
                "network input %dx%d instead of the model file's %dx%d",
                input_hw[1],
                input_hw[0],
                spec.input_hw[1],
                spec.input_hw[0],
            )
            spec = dataclasses.replace(spec, input_hw=tuple(input_hw))
        return cls(network, spec, device, precision, **options)  # type: ignore[arg-type]

    @property
    def _is_fast_path(self) -> bool:
        return (
            self.backend != "torch" or self.compile_mode is not None or self.cuda_graphs
        )

    def describe(self) -> str:
        """How the network runs, e.g. ``"bf16, channels_last, compiled (default)"``."""
        parts = [self.precision.name]
        if self.channels_last:
            parts.append("channels_last")
        if self.backend == "openvino":  # fp32 or the INT8 artefact, not autocast
            parts = ["int8" if self.int8 is not None else "fp32"]
        if self.backend != "torch":
            parts.append(self._runner.name)
        if self.compile_mode is not None:
            parts.append(f"compiled ({self.compile_mode})")
        if self.cuda_graphs:
            parts.append("CUDA graphs")
        if self.streams > 1:
            parts.append(f"{self.streams} streams")
        if self.tta != "none":
            parts.append(f"{self.tta} TTA (files)")
        return ", ".join(parts)

    @torch.inference_mode()
    def __call__(self, frame: Frame) -> Prediction:
        return self.segment([frame])[0]

    @torch.inference_mode()
    def segment(
        self, frames: Sequence[Frame], *, tta: TTA | None = None
    ) -> list[Prediction]:
        """Segment a batch of frames of one size (batched for throughput on files).

        Args:
            frames: Frames of one size.
            tta: Test-time augmentation for this batch; ``None``: the
                segmenter's own setting.
        """
        if not frames:
            return []
        sizes = {frame.hw for frame in frames}
        if len(sizes) != 1:
            raise ValueError(
                f"a batch must hold frames of one size, got {sorted(sizes)}"
            )
        images = self._upload([frame.pixels for frame in frames])
        probabilities = self.probabilities(images, tta=self.tta if tta is None else tta)
        return [
            Prediction(frame, probabilities[i], self.spec.threshold)
            for i, frame in enumerate(frames)
        ]

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor, *, tta: TTA = "none") -> torch.Tensor:
        """Probabilities for images already on the device (what :meth:`segment` runs).

        Args:
            images: (N, 3, H, W) uint8 RGB or float RGB in [0, 1] on
                ``self.device``; at ``spec.input_hw`` no resize happens (the
                model-only benchmark).
            tta: Test-time augmentation (:func:`predict_probabilities`).

        Returns:
            (N, h, w) float32 probabilities at ``spec.input_hw`` on ``self.device``.
        """
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return predict_probabilities(
            self._runner,
            images,
            self.spec.input_hw,
            self.precision,
            tta=tta,
            output_hw=self.spec.input_hw,
        )

    @torch.inference_mode()
    def warm_up(self, batch_sizes: Sequence[int], calls: int = WARM_UP_CALLS) -> float:
        """Run random inputs at the network's input size, to compile, capture or tune.

        Returns:
            Seconds spent (the device synchronized).
        """
        height, width = self.spec.input_hw
        generator = torch.Generator(device="cpu").manual_seed(0)
        start_s = time.perf_counter()
        for size in sorted(set(batch_sizes)):
            # NHWC memory, as uploaded frames are (cudnn tunes per layout).
            images = torch.rand((size, height, width, 3), generator=generator)
            images = images.to(self.device).permute(0, 3, 1, 2)
            for _ in range(calls):
                self.probabilities(images)
        synchronize(self.device)
        return time.perf_counter() - start_s

    def _make_runner(self, network: nn.Module) -> Runner:
        if self.backend == "onnx":
            from streamseg.backends.onnx import OnnxRunner

            return OnnxRunner.for_network(network, self.spec)
        if self.backend == "openvino":
            from streamseg.backends.openvino import OpenVinoRunner

            if self.int8 is not None:
                return OpenVinoRunner.int8(
                    self.int8, streams=self.streams, input_hw=self.spec.input_hw
                )
            return OpenVinoRunner.fp32(network, self.spec, streams=self.streams)
        return TorchRunner(
            network,
            self.device,
            self.precision,
            channels_last=self.channels_last,
            compile_mode=self.compile_mode,  # type: ignore[arg-type]
            cuda_graphs=self.cuda_graphs,
            batch_sizes=self.batch_sizes,
        )


def check_options(
    device: torch.device,
    precision: Precision,
    *,
    backend: str = "torch",
    compile: bool = False,
    compile_mode: str = "default",
    cuda_graphs: bool = False,
    batch_sizes: Sequence[int] = (1,),
) -> None:
    """Reject option combinations that cannot work, with the fix.

    Raises:
        ValueError: Names the option and what to set instead.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(
            f"compile_mode {compile_mode!r}: expected one of {', '.join(COMPILE_MODES)}"
        )
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch_sizes: expected sizes >= 1, got {list(batch_sizes)}")
    if backend in CPU_GRAPHS:
        if device.type != "cpu":
            raise ValueError(
                f"backend {backend} runs on the CPU, but the device is {device}; use "
                "backend torch on CUDA (fp16, cuda_graphs or compile)"
            )
        if precision.dtype is not None:
            raise ValueError(
                f"backend {backend} runs {CPU_GRAPHS[backend]}, but precision is "
                f"{precision.name}; set precision fp32 (or auto)"
            )
        if compile or cuda_graphs:
            raise ValueError(
                "compile and cuda_graphs apply to backend torch; turn them off for "
                f"backend {backend}"
            )
    if cuda_graphs and compile:
        raise ValueError(
            "cuda_graphs and compile together: use compile with compile_mode "
            "reduce-overhead (Inductor's own CUDA graphs) or cuda_graphs alone"
        )
    if cuda_graphs and device.type != "cuda":
        raise ValueError(
            f"cuda_graphs needs a CUDA device, got {device}; turn it off on the CPU"
        )
